from skolsynk_services.egil_receiver.app import main

main()
