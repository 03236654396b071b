#!/usr/bin/env python3
"""Group the samples of a flat `perf report` by the component they fall in.

usage: perf report -i perf.data --no-children --sort dso,sym -g none \\
           | load-tests/perf-categories.py

Each symbol goes to the first category whose pattern matches its shared object
and name. Kernel symbols (`[k]`) form one category, listed with their largest
symbols. The patterns match the crates and libraries of the Watchword server,
of watchword-replay and of nats-server; a symbol that matches none counts as
"other user space".
"""

import re
import sys

CATEGORIES = [
    ("Ed25519 sign and verify (curve25519-dalek, SHA-512)", r"curve25519|sha512|ed25519"),
    ("SHA-256", r"sha256"),
    ("malloc, free, memcpy", r"malloc|free|realloc|_int_|unlink_chunk|memmove|memcpy|memset|cfree|tcache"),
    ("SoftHSM and its OpenSSL", r"libsofthsm|libcrypto|libstdc"),
    ("TLS (rustls, ring)", r"rustls|ring_core|\bring::"),
    ("AES-GCM of content (aes-gcm crate)", r"aes::|polyval|ghash|aes_gcm::"),
    ("redb", r"redb::"),
    ("MessagePack (rmp-serde, serde)", r"rmp|serde"),
    ("tokio runtime", r"tokio::"),
    ("HTTP (hyper, h2, axum)", r"hyper|h2::|axum|http::"),
    ("NATS client (async-nats)", r"async_nats"),
    ("Go runtime (nats-server)", r"runtime\."),
]

LINE = re.compile(r"\s*([\d.]+)%\s+(\S+)\s+\[(.)\]\s+(.*)")


def main():
    totals, kernel = {}, {}
    for line in sys.stdin:
        match = LINE.match(line)
        if not match:
            continue
        share, dso, kind, symbol = float(match[1]), match[2], match[3], match[4].strip()
        if kind == "k":
            totals["kernel"] = totals.get("kernel", 0) + share
            kernel[symbol] = kernel.get(symbol, 0) + share
            continue
        name = next((name for name, pattern in CATEGORIES if re.search(pattern, f"{dso} {symbol}")),
                    "other user space")
        totals[name] = totals.get(name, 0) + share
    for name, share in sorted(totals.items(), key=lambda item: -item[1]):
        print(f"{share:6.1f} %  {name}")
    print("largest kernel symbols:")
    for symbol, share in sorted(kernel.items(), key=lambda item: -item[1])[:8]:
        print(f"{share:6.1f} %  {symbol}")


if __name__ == "__main__":
    main()
