"""Test stand-in for `launch_ros.actions`: a Node records its arguments."""


class Node:
    def __init__(self, **kwargs):
        self.kwargs = kwargs
