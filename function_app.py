"""The Function App: composes one Blueprint per trigger family. Nothing else happens here."""

from __future__ import annotations

import gc

# Indexing creates some 90,000 long-lived objects (modules, classes, pydantic validators)
# and little garbage (about 2,000 objects in cycles): the cyclic collector's ~240 passes
# over the growing heap during these imports cost about a tenth of the indexing time and
# free almost nothing (bench/cold_start.py). It is paused for the imports only and left
# as it was found.
_collecting = gc.isenabled()
gc.disable()
try:
    import azure.functions as func

    from functions import bookings, console, graph, health, openapi, resources, timers, workers
finally:
    if _collecting:
        gc.enable()

# Who may call what is the caller's app role (functions/http.py `requires`, behind App
# Service Authentication); a function key is a second lock on top. Routes only booking
# frontends call (servers, which can keep a key) need one, the default here. Routes an
# administrator's browser calls (the console, signed in with an Easy Auth session) are
# anonymous at the host: a key handed to a browser is a key given away.
app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
app.register_functions(health.bp)
app.register_functions(resources.bp)
app.register_functions(bookings.bp)
app.register_functions(graph.bp)
app.register_functions(workers.bp)
app.register_functions(timers.bp)
app.register_functions(openapi.bp)
app.register_functions(console.bp)
