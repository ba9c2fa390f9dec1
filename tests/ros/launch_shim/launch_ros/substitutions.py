"""Test stand-in for `launch_ros.substitutions`."""


class FindPackageShare:
    def __init__(self, package):
        self.package = package

    def perform(self, context):
        return context.package_shares[self.package]
