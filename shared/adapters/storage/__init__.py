"""Azure Table Storage and Queue Storage adapters (the SDKs' aio clients)."""
