from ss12000_puller.app import main

main()
