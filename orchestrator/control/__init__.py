"""Control and visibility: the control API (server and client), the event hub, metrics,
notifications, the kanban board and the commands that talk to a running daemon."""
