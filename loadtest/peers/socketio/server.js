// Socket.IO 4 broadcast server: the reference peer `realtime-loadtest compare` measures.
//
// WebSocket transport only, no per-message deflate (Socket.IO's documented production settings for
// a WebSocket-only deployment; bufferutil and utf-8-validate are installed as its docs recommend).
// A client emits `join` with a room name (acknowledged once joined), and `publish` with
// `{room, payload}`; the payload goes to every other member of the room as a `msg` event
// (`socket.to(room).emit`, which encodes the packet once for the whole room).
//
// Usage: PORT=4102 HOST=127.0.0.1 node server.js

"use strict";

const http = require("node:http");
const { Server } = require("socket.io");

const port = Number(process.env.PORT || 4102);
const host = process.env.HOST || "127.0.0.1";

const httpServer = http.createServer();
const io = new Server(httpServer, {
  transports: ["websocket"],
  perMessageDeflate: false,
  httpCompression: false,
  serveClient: false,
});

io.on("connection", (socket) => {
  socket.on("join", (room, ack) => {
    if (typeof room !== "string") return;
    socket.join(room);
    if (typeof ack === "function") ack("ok");
  });
  socket.on("publish", (message) => {
    if (!message || typeof message.room !== "string") return;
    socket.to(message.room).emit("msg", message.payload);
  });
});

httpServer.listen(port, host, () => {
  console.log(`socket.io listening on http://${host}:${port}`);
});

for (const signal of ["SIGINT", "SIGTERM"]) {
  process.on(signal, () => process.exit(0));
}
