from spooler.cli import main

main()
