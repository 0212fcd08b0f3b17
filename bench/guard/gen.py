#!/usr/bin/env python3
"""Writes paginated JSON answers of synthetic residents (valid NIR keys and IBAN check
digits, phones, e-mails) for the guarded-route benchmark: page-1k.json (about 1 KiB) and
page-100k.json (about 100 KiB). Nothing is real. Usage: gen.py DIR"""
import json, os, sys

def nir(r):
    sex = 1 + r % 2
    n = int(f"{sex}{(r >> 1) % 100:02}{1 + (r >> 8) % 12:02}{1 + (r >> 12) % 19:02}{1 + (r >> 20) % 989:03}{1 + (r >> 32) % 999:03}")
    s = f"{n:013}"
    return f"{s[0]} {s[1:3]} {s[3:5]} {s[5:7]} {s[7:10]} {s[10:13]} {97 - n % 97:02}"

def iban(r):
    bban = f"{10000 + r % 90000:05}{(r >> 17) % 100000:05}{(r >> 7) % 10**11:011}{(r >> 40) % 97:02}"
    check = 98 - int(bban + "152700") % 97
    packed = f"FR{check:02}{bban}"
    return " ".join(packed[i:i + 4] for i in range(0, len(packed), 4))

def person(i):
    r = (i * 0x9E3779B97F4A7C15) % 2**64
    return {"id": i, "nom": "Martin", "prenom": "Camille", "nir": nir(r),
            "telephone": "06 %02d %02d %02d %02d" % (r % 100, (r >> 8) % 100, (r >> 16) % 100, (r >> 24) % 100),
            "email": f"camille.martin{i}@exemple.fr", "iban": iban(r)}

def page(n):
    return json.dumps({"data": [person(i) for i in range(1, n + 1)], "page": 1, "per_page": n},
                      ensure_ascii=False, separators=(",", ":"))

out = sys.argv[1]
for sub in ("on", "off"):
    os.makedirs(os.path.join(out, sub), exist_ok=True)
    # About 1 KiB: five residents; about 100 KiB: five hundred and fifty.
    for name, n in (("page-1k.json", 5), ("page-100k.json", 550)):
        with open(os.path.join(out, sub, name), "w") as f:
            f.write(page(n))
