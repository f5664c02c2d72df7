from damjobs.cli import main

main()
