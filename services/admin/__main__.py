from admin.app import main

main()
