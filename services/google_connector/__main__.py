from google_connector.app import main

main()
