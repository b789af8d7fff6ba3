from basketball_api.cli import main

main()
