from raysteal.cli import main

main()
