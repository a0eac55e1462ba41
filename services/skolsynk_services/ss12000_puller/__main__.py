from skolsynk_services.ss12000_puller.app import main

main()
