from egil_receiver.app import main

main()
