"""The gateway command line: the argparse code of every command group."""
