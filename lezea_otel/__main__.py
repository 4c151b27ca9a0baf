from lezea_otel.cli import main

main()
