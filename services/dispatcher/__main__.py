from dispatcher.app import main

main()
