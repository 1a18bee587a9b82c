"""The live view page the WebSocket output serves (`index.html`, one static file, no build step)."""
