"""`tradeloop reports serve`: the reports folder over HTTP, so the UI's report links open."""

from __future__ import annotations

from typing import Annotated

import typer

reports_app = typer.Typer(help="The HTML reports (backtests, walk-forwards, demo).")


def register(app: typer.Typer) -> None:
    app.add_typer(reports_app, name="reports")


@reports_app.command("serve")
def serve_reports(
    port: Annotated[int, typer.Option(help="port (0 = any free port)")] = 8000,
    host: Annotated[str, typer.Option(help="address to bind (loopback by default)")] = "127.0.0.1",
    seconds: Annotated[float, typer.Option(help="stop after this long (0 = until Ctrl-C)")] = 0.0,
) -> None:
    """Serve TRADELOOP_HOME/reports over HTTP. Set TRADELOOP_REPORTS_URL to the printed URL and
    the flows' report artifacts link there (a browser blocks file:// links from the UI)."""
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    from warehouse import get_settings

    directory = get_settings().home / "reports"
    directory.mkdir(parents=True, exist_ok=True)

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass  # one line per request is noise for a person reading the terminal

    handler = functools.partial(Quiet, directory=str(directory))
    server = ThreadingHTTPServer((host, port), handler)
    url = f"http://{host}:{server.server_address[1]}"
    typer.echo(f"reports at {url}/ (from {directory}); Ctrl-C stops")
    typer.echo(f"  export TRADELOOP_REPORTS_URL={url}")
    if seconds > 0:
        threading.Timer(seconds, server.shutdown).start()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
