from gdpr.app import main

main()
