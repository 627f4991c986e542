# A TCP proxy for scripts/measure-pg-cut.sh: `freeze-proxy.py LISTEN_PORT TARGET_PORT` (127.0.0.1).
# A TCP proxy that can freeze: on SIGUSR1 every connection stops forwarding (sockets stay open, as
# with a cut network path); on SIGUSR2 forwarding resumes. While frozen, new connections are accepted
# and left unanswered.
import asyncio, signal, sys
listen, target = int(sys.argv[1]), int(sys.argv[2])
frozen = asyncio.Event()  # set = flowing
frozen.set()
async def pipe(r, w):
    try:
        while True:
            await frozen.wait()
            data = await r.read(65536)
            if not data:
                break
            await frozen.wait()
            w.write(data)
            await w.drain()
    except Exception:
        pass
    finally:
        try: w.close()
        except Exception: pass
async def handle(cr, cw):
    await frozen.wait()
    try:
        sr, sw = await asyncio.open_connection('127.0.0.1', target)
    except Exception:
        cw.close(); return
    await asyncio.gather(pipe(cr, sw), pipe(sr, cw))
async def main():
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGUSR1, frozen.clear)
    loop.add_signal_handler(signal.SIGUSR2, frozen.set)
    server = await asyncio.start_server(handle, '127.0.0.1', listen)
    async with server:
        await server.serve_forever()
asyncio.run(main())
