"""The event log: every change of every run, in order, in a Redis Stream of the broker's Redis.

`event` is one change, `log` appends (and `appender` appends for code that must not wait),
`reading` is the one way to read the stream, `hub` fans it out to live watchers in an event
loop, and `position` says how far the SQL projection (`agentexec.db.projector`) has applied it.
"""
