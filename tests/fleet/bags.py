"""Test bags for the fleet driver: a labelled bag cut into parts by time (with the mcap
package, independent of the binary), and a damaged copy of one."""

from pathlib import Path

from mcap.reader import make_reader
from mcap.writer import Writer


def split(source: Path, out: Path, parts: int, frame_ns: int) -> list[Path]:
    """Cuts the messages of the .mcap file `source` into `parts` single-file bags of
    consecutive frames (by log time, frames `frame_ns` apart), every topic kept."""
    with open(source, "rb") as f:
        messages = list(make_reader(f).iter_messages(log_time_order=True))
    start = messages[0][2].log_time
    frames = (messages[-1][2].log_time - start) // frame_ns + 1
    per_part = -(-frames // parts)
    paths = []
    for k in range(parts):
        path = out / f"part{k}.mcap"
        with open(path, "wb") as f:
            writer = Writer(f)
            writer.start(profile="ros2", library="bayes_perception tests")
            schemas, channels = {}, {}
            for schema, channel, message in messages:
                if (message.log_time - start) // frame_ns // per_part != k:
                    continue
                if schema.id not in schemas:
                    schemas[schema.id] = writer.register_schema(schema.name, schema.encoding, schema.data)
                if channel.id not in channels:
                    channels[channel.id] = writer.register_channel(
                        channel.topic, channel.message_encoding, schemas[schema.id], channel.metadata
                    )
                writer.add_message(channels[channel.id], message.log_time, message.data,
                                   message.publish_time, message.sequence)
            writer.finish()
        paths.append(path)
    return paths


def damaged_copy(source: Path, path: Path) -> Path:
    """The first 60 % of the file: a bag cut off mid-write (no summary, a broken record)."""
    data = source.read_bytes()
    path.write_bytes(data[: len(data) * 6 // 10])
    return path
