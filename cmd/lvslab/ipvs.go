package main

import "github.com/spf13/cobra"

func (a *app) ipvsCommand() *cobra.Command {
	var o IPVSOptions
	c := &cobra.Command{
		Use:   "ipvs [--list|--save|--json] [LAB]",
		Short: "the director's live table, as ipvsadm -Ln and ipvsadm-save -n print it",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 {
				o.Lab = args[0]
			}
			return a.backend.IPVS(cmd.Context(), o)
		},
	}
	c.Flags().BoolVar(&o.List, "list", false, "only the ipvsadm -Ln layout")
	c.Flags().BoolVar(&o.Save, "save", false, "only the ipvsadm-save -n layout")
	c.Flags().BoolVar(&o.JSON, "json", false, "the table with its live counts as JSON (lvslab's ipvs.schema.json)")
	return labCommand(c)
}
