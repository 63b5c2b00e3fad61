"""The Function App: composes one Blueprint per trigger family. Nothing else happens here."""

from __future__ import annotations

import azure.functions as func

from functions import health

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
app.register_functions(health.bp)
