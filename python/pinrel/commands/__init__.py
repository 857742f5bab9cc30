"""One module per `pinrel` subcommand; each defines `register(subparsers)` and sets `func`."""
