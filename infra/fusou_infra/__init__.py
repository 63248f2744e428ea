"""The FUSOU compaction service in AWS CDK: one stack that wires one construct per concern."""
