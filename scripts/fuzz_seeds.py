"""Seed corpora for the fuzz targets (fuzz/fuzz_targets/), from real files: the bags of
`bayes_perception bag sample` (MCAP, our writer) and of rosbags (SQLite3, an independent
writer), their CDR messages, small PNG/JPEG images, the shipped params files and the demo
model's model.yaml.

usage: python fuzz_seeds.py BIN CORPUS_DIR   (the torch venv's python: it has rosbags)
"""

import os
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from rosbags.rosbag2 import Writer
from rosbags.rosbag2.enums import StoragePlugin
from rosbags.typesys import Stores, get_typestore

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    binary, corpus = Path(sys.argv[1]), Path(sys.argv[2])
    dirs = {}
    for target in ["image_msg", "compressed", "cdr", "bag_mcap", "bag_sqlite", "params_yaml", "model_yaml", "safetensors"]:
        dirs[target] = corpus / target
        dirs[target].mkdir(parents=True, exist_ok=True)

    store = get_typestore(Stores.ROS2_JAZZY)
    Image = store.types["sensor_msgs/msg/Image"]
    CompressedImage = store.types["sensor_msgs/msg/CompressedImage"]
    CameraInfo = store.types["sensor_msgs/msg/CameraInfo"]
    Header = store.types["std_msgs/msg/Header"]
    Time = store.types["builtin_interfaces/msg/Time"]
    Roi = store.types["sensor_msgs/msg/RegionOfInterest"]
    header = Header(stamp=Time(sec=1, nanosec=2), frame_id="cam")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # MCAP bags from our own writer: raw bgr8 and JPEG, 8x6 pixels, 2 frames.
        for name, extra in [("raw", []), ("jpeg", ["--compressed"])]:
            out = tmp / name
            subprocess.run(
                [binary, "bag", "sample", out, "--frames", "2", "--width", "8", "--height", "6", *extra],
                check=True, stdout=subprocess.DEVNULL,
            )
            for mcap in out.glob("*.mcap"):
                shutil.copy(mcap, dirs["bag_mcap"] / f"{name}.mcap")
        # An SQLite3 bag from rosbags: raw, compressed and camera_info messages.
        pixels = np.arange(8 * 6 * 3, dtype=np.uint8)
        raw = Image(header=header, height=6, width=8, encoding="rgb8", is_bigendian=0, step=24, data=pixels)
        mono16 = Image(header=header, height=2, width=3, encoding="mono16", is_bigendian=1, step=6,
                       data=np.arange(12, dtype=np.uint8))
        info = CameraInfo(header=header, height=6, width=8, distortion_model="plumb_bob",
                          d=np.zeros(5), k=np.eye(3).ravel(), r=np.eye(3).ravel(), p=np.zeros(12),
                          binning_x=0, binning_y=0,
                          roi=Roi(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))
        jpeg = (ROOT / "fuzz" / "seeds" / "tiny.jpg")
        compressed = None
        if jpeg.is_file():
            compressed = CompressedImage(header=header, format="jpeg",
                                         data=np.frombuffer(jpeg.read_bytes(), dtype=np.uint8))
        bag = tmp / "sqlite"
        with Writer(bag, version=8, storage_plugin=StoragePlugin.SQLITE3) as writer:
            conns = [
                (writer.add_connection("/camera/image_raw", Image.__msgtype__, typestore=store), raw),
                (writer.add_connection("/camera/camera_info", CameraInfo.__msgtype__, typestore=store), info),
            ]
            if compressed is not None:
                conns.append((writer.add_connection("/camera/image_raw/compressed",
                                                    CompressedImage.__msgtype__, typestore=store), compressed))
            for i, (conn, msg) in enumerate(conns):
                writer.write(conn, 1000 + i, store.serialize_cdr(msg, conn.msgtype))
        for db3 in bag.glob("*.db3"):
            shutil.copy(db3, dirs["bag_sqlite"] / "rosbags.db3")

        # CDR messages, both byte orders where rosbags can write them.
        cdr_msgs = [("image", raw, Image), ("mono16", mono16, Image), ("camera_info", info, CameraInfo)]
        if compressed is not None:
            cdr_msgs.append(("compressed", compressed, CompressedImage))
        for name, msg, typ in cdr_msgs:
            data = store.serialize_cdr(msg, typ.__msgtype__)
            (dirs["cdr"] / f"{name}.cdr").write_bytes(bytes(data))
            big = store.serialize_cdr(msg, typ.__msgtype__, little_endian=False)
            (dirs["cdr"] / f"{name}_be.cdr").write_bytes(bytes(big))

    # image_msg: the target's own layout — width, height, step (u32 LE), flags, encoding
    # pick, then data.
    for pick, (w, h, step, n) in enumerate([(4, 3, 12, 36), (4, 3, 16, 48), (3, 2, 6, 12), (2, 2, 4, 8)]):
        head = struct.pack("<III", w, h, step) + bytes([pick & 1, pick])
        (dirs["image_msg"] / f"seed{pick}").write_bytes(head + bytes(range(n)))

    # compressed: format pick byte, then a small PNG or JPEG.
    for name, pick in [("tiny.png", 1), ("tiny.jpg", 0)]:
        path = ROOT / "fuzz" / "seeds" / name
        if path.is_file():
            (dirs["compressed"] / name).write_bytes(bytes([pick]) + path.read_bytes())

    for params in (ROOT / "config").glob("params*.yaml"):
        shutil.copy(params, dirs["params_yaml"] / params.name)
    shutil.copy(ROOT / "models" / "demo" / "model.yaml", dirs["model_yaml"] / "demo.yaml")
    seed = ROOT / "fuzz" / "seeds" / "tiny.safetensors"
    if seed.is_file():
        shutil.copy(seed, dirs["safetensors"] / "tiny.safetensors")
    print(f"fuzz seeds in {corpus}: " + ", ".join(f"{t} {len(list(d.iterdir()))}" for t, d in dirs.items()))


if __name__ == "__main__":
    main()
