"""`python -m bioclip_cli` runs the `bioclip` command line."""

from bioclip_cli.cli.app import main

if __name__ == "__main__":
    main()
