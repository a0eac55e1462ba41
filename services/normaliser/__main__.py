from normaliser.app import main

main()
