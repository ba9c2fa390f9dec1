"""Test stand-in for `launch.conditions`."""


class IfCondition:
    def __init__(self, predicate):
        self.predicate = predicate

    def evaluate(self, context):
        value = self.predicate.perform(context) if hasattr(self.predicate, "perform") else self.predicate
        return str(value).lower() in ("true", "1")
