"""Writes a damaged copy of a TorchScript archive, the way a hostile or
corrupted file would arrive (issue 19's mutation campaign found each):

    damage_archive.py MODE IN.pt OUT.pt

MODE: truncate-record (the largest tensor record cut to half its bytes),
drop-record (that record left out), truncate-pickle (data.pkl cut in half),
bad-opcode (data.pkl's first opcode after PROTO replaced by 0xff),
rename-constant (a class's `__buffers__ = []` renamed to `training = []` in
its code, which crashes LibTorch 1.13's loader), untyped-attribute (a class
attribute's `: Final[int]` annotation becomes `8 Final[int]`, which fails an
internal assertion of LibTorch 1.13's parser)."""
import sys
import zipfile


def main():
    mode, src, dst = sys.argv[1:4]
    zin = zipfile.ZipFile(src)
    infos = zin.infolist()
    records = [i for i in infos if "/data/" in i.filename]
    largest = max(records, key=lambda i: i.file_size).filename if records else None
    renamed = False
    with zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for info in infos:
            data = zin.read(info.filename)
            name = info.filename
            if mode == "truncate-record" and name == largest:
                data = data[: len(data) // 2]
            elif mode == "drop-record" and name == largest:
                continue
            elif mode == "truncate-pickle" and name.endswith("/data.pkl"):
                data = data[: len(data) // 2]
            elif mode == "bad-opcode" and name.endswith("/data.pkl"):
                data = data[:2] + b"\xff" + data[3:]
            elif mode == "rename-constant" and not renamed and name.endswith(".py") and b"__buffers__ = []" in data:
                data = data.replace(b"__buffers__ = []", b"training = []", 1)
                renamed = True
            elif mode == "untyped-attribute" and not renamed and name.endswith(".py") and b" : Final[int]" in data:
                data = data.replace(b" : Final[int]", b" 8 Final[int]", 1)
                renamed = True
            zout.writestr(info, data)
    if mode in ("rename-constant", "untyped-attribute") and not renamed:
        sys.exit(f"damage_archive: nothing for {mode} in " + src)


if __name__ == "__main__":
    main()
