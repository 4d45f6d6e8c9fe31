-- a second database for the DuckLake catalog (the first, 'prefect', is Prefect's)
CREATE DATABASE lake OWNER tradeloop;
