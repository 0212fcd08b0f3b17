"""A local SMTP server for the integration tests (aiosmtpd).

Listens on 127.0.0.1 on a free port (or the port given as its argument), prints `PORT <n>` first, then one JSON line per
message received: envelope recipients, subject, decoded text body and the headers the
tests check. Runs until stdin closes (the test process ends).
"""

import asyncio
import email
import email.policy
import json
import sys

from aiosmtpd.smtp import SMTP


class Sink:
    async def handle_DATA(self, server, session, envelope):
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        body = msg.get_body(preferencelist=("plain",))
        print(
            json.dumps(
                {
                    "to": envelope.rcpt_tos,
                    "from": envelope.mail_from,
                    "subject": str(msg["Subject"]),
                    "body": body.get_content() if body is not None else "",
                    "list_unsubscribe": str(msg["List-Unsubscribe"] or ""),
                    "list_unsubscribe_post": str(msg["List-Unsubscribe-Post"] or ""),
                }
            ),
            flush=True,
        )
        return "250 OK"


async def main():
    loop = asyncio.get_running_loop()
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    server = await loop.create_server(lambda: SMTP(Sink()), "127.0.0.1", port)
    port = server.sockets[0].getsockname()[1]
    print(f"PORT {port}", flush=True)
    # Stop when the parent closes our stdin.
    await loop.run_in_executor(None, sys.stdin.read)
    server.close()


asyncio.run(main())
