"""Test stand-in for ROS 2's `launch_ros` (see ../README.md)."""
