from skolsynk_services.admin.app import main

main()
