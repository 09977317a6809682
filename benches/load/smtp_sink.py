"""An SMTP server for the mail-latency benchmark: accepts every mail and logs, per mail, when it
was accepted (ms since the Unix epoch), its Message-ID and its Subject. Run by Debian's Python
with python3-aiosmtpd: python3 smtp_sink.py HOST PORT LOG."""

import sys
import time

from aiosmtpd.controller import Controller


class Sink:
    def __init__(self, log):
        self.log = log

    async def handle_DATA(self, server, session, envelope):
        accepted = int(time.time() * 1000)
        message_id, subject = "", ""
        for line in envelope.content.decode("utf-8", "replace").splitlines():
            if not line:
                break
            lower = line.lower()
            if lower.startswith("message-id:"):
                message_id = line.split(":", 1)[1].strip()
            elif lower.startswith("subject:"):
                subject = line.split(":", 1)[1].strip()
        self.log.write(f"{accepted}\t{message_id}\t{subject}\n")
        self.log.flush()
        return "250 OK"


if __name__ == "__main__":
    host, port, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    with open(path, "a") as log:
        controller = Controller(Sink(log), hostname=host, port=port)
        controller.start()
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
        finally:
            controller.stop()
