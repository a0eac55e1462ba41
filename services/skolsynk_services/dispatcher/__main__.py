from skolsynk_services.dispatcher.app import main

main()
