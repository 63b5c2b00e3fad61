"""The Function App: composes one Blueprint per trigger family. Nothing else happens here."""

from __future__ import annotations

import azure.functions as func

from functions import bookings, graph, health, openapi, resources, timers, workers

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
app.register_functions(health.bp)
app.register_functions(resources.bp)
app.register_functions(bookings.bp)
app.register_functions(graph.bp)
app.register_functions(workers.bp)
app.register_functions(timers.bp)
app.register_functions(openapi.bp)
