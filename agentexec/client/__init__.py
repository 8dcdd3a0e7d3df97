"""What a web app calls: enqueue runs, cancel them, watch them live, read their activity.

Everything here works in any process that shares the broker's Redis and the activity
database; none of it loads the worker (`agentexec.worker`) or the Agents SDK.
"""
