from skolsynk_services.google_connector.app import main

main()
