from graph_connector.app import main

main()
