"""Helpers shared by test modules. Test files and conftest files import from here; no test
module imports a conftest (pytest loads those itself, and importing one as a library runs it
twice under two module names)."""
