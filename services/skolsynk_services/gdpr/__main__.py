from skolsynk_services.gdpr.app import main

main()
