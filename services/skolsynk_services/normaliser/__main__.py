from skolsynk_services.normaliser.app import main

main()
