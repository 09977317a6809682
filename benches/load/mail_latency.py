"""Reads smtp_sink.py's log: for every order confirmation, the time from the order's
confirmation (the event's time, in its UUIDv7 Message-ID) to the SMTP server's acceptance.
Prints count, p50, p99 and max in milliseconds, and how many other mails were accepted."""

import sys


def uuid7_ms(message_id):
    hex_digits = message_id.strip("<>").split("@")[0].replace("-", "")
    return int(hex_digits[:12], 16)


orders, others = [], 0
for line in open(sys.argv[1]):
    accepted, message_id, subject = line.rstrip("\n").split("\t")
    if subject.endswith("is confirmed"):
        orders.append(int(accepted) - uuid7_ms(message_id))
    else:
        others += 1
orders.sort()
if not orders:
    sys.exit("no order confirmations in the log")


def pct(p):
    return orders[min(len(orders) - 1, int(len(orders) * p))]


print(f"mails: {len(orders)} order confirmations, p50 {pct(0.5)} ms, p99 {pct(0.99)} ms, "
      f"max {orders[-1]} ms ({others} other mails)")
