#!/usr/bin/python3
"""Opens N TLS connections to 127.0.0.1:PORT, sends one GET with the token on each (so each is
a served keep-alive connection), keeps them all open and idle, prints "ready K" (K = the
connections that got a 2xx) and waits until stdin closes.
usage: idle-conns.py PORT PATH TOKEN N"""
import asyncio, ssl, sys

PORT, PATH, TOKEN, N = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
REQ = ("GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nVersion: 2021-07-28\r\n"
       "Authorization: Bearer %s\r\n\r\n" % (PATH, TOKEN)).encode()


async def one(ctx, sem, held):
    async with sem:
        try:
            r, w = await asyncio.open_connection("127.0.0.1", PORT, ssl=ctx)
            w.write(REQ)
            head = await r.readuntil(b"\r\n\r\n")
            n = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    n = int(line.split(b":")[1])
            await r.readexactly(n)
            held.append(w)
            return head.startswith(b"HTTP/1.1 2")
        except (OSError, asyncio.IncompleteReadError, ssl.SSLError):
            return False


async def main():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    sem, held = asyncio.Semaphore(200), []
    ok = await asyncio.gather(*(one(ctx, sem, held) for _ in range(N)))
    print("ready %d" % sum(ok), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    for w in held:
        w.close()


asyncio.run(main())
