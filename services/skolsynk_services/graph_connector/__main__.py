from skolsynk_services.graph_connector.app import main

main()
