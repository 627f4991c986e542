"""FastAPI WebSocket broadcast server: the reference peer `realtime-loadtest compare` measures.

Written the way FastAPI's WebSocket guide does it (a ConnectionManager holding the open sockets),
with rooms: a client connects to `/ws/{room}`, is told `{"type":"joined","room":...}`, and every text
message it sends (`{"type":"publish","payload":...}`) is sent to every *other* member of the room as
`{"type":"msg","payload":...}`. The outgoing JSON is encoded once per message, then sent to each member.

Run it as README.md says (uvicorn, one worker, uvloop + httptools, no access log).
"""

import json

from fastapi import FastAPI, WebSocket, WebSocketDisconnect


class ConnectionManager:
    """The open sockets of each room."""

    def __init__(self) -> None:
        self.rooms: dict[str, set[WebSocket]] = {}

    async def connect(self, room: str, websocket: WebSocket) -> None:
        await websocket.accept()
        self.rooms.setdefault(room, set()).add(websocket)

    def disconnect(self, room: str, websocket: WebSocket) -> None:
        members = self.rooms.get(room)
        if members is not None:
            members.discard(websocket)
            if not members:
                del self.rooms[room]

    async def broadcast(self, room: str, message: str, sender: WebSocket) -> None:
        # A copy: members may leave while this coroutine awaits a send.
        for connection in list(self.rooms.get(room, ())):
            if connection is sender:
                continue
            try:
                await connection.send_text(message)
            except (WebSocketDisconnect, RuntimeError):
                # The member is gone; its own endpoint coroutine removes it.
                pass


app = FastAPI()
manager = ConnectionManager()


@app.websocket("/ws/{room}")
async def websocket_endpoint(websocket: WebSocket, room: str) -> None:
    await manager.connect(room, websocket)
    try:
        await websocket.send_text(json.dumps({"type": "joined", "room": room}))
        while True:
            data = json.loads(await websocket.receive_text())
            if data.get("type") != "publish":
                continue
            message = json.dumps({"type": "msg", "payload": data.get("payload")})
            await manager.broadcast(room, message, websocket)
    except WebSocketDisconnect:
        pass
    finally:
        manager.disconnect(room, websocket)
