from tune.cli.commands import main

raise SystemExit(main())
