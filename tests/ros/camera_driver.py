"""A stand-in camera driver for the end-to-end tests: its own process (its own DDS
participant), publishing rgb8 frames on TOPIC at RATE Hz with stamps FIRST, FIRST+1, ...
(nanoseconds) until it is killed. Reliable QoS, so every frame reaches a reliable
subscriber. Prints "publishing" once the publisher exists.

    python camera_driver.py TOPIC FIRST_STAMP RATE_HZ HEIGHT WIDTH
"""
import sys
import time

import numpy as np
import rclpy
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image


def main():
    topic, first, rate, height, width = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    rclpy.init()
    node = rclpy.create_node("camera_driver")
    qos = QoSProfile(reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST, depth=10)
    publisher = node.create_publisher(Image, topic, qos)
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), (x * 7 + y * 13) % 256], -1)
    msg = Image()
    msg.header.frame_id = "camera_optical"
    msg.height, msg.width, msg.step, msg.encoding = height, width, width * 3, "rgb8"
    msg.data = rgb.astype(np.uint8).tobytes()
    print("publishing", flush=True)
    stamp = first
    while True:
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, 1_000_000_000)
        publisher.publish(msg)
        stamp += 1
        time.sleep(1.0 / rate)


if __name__ == "__main__":
    main()
