from keystile.cli import main

raise SystemExit(main())
